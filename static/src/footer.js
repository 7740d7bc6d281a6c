// The public object: window.BrandChat, globalThis.BrandChat or module.exports (see header.js).
return {
  DEFAULTS,
  STATES,
  STATE_TABLE,
  DOWNGRADE_REASONS,
  CLOSE_CODES,
  ENDS_STREAM,
  nextState,
  backoffDelay,
  Backoff,
  Watchdog,
  ReplyState,
  closeAction,
  orderTransports,
  activeFailures,
  uuid,
  wsUrl,
  WebSocketTransport,
  SseTransport,
  ChatClient,
  version: "1",
};
});
