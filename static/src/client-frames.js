/**
 * ChatClient, continued: the frames that arrive on a transport. An `accepted` takes a message out
 * of the outbox; stream events go through the reply's ReplyState (so each word is emitted once);
 * seq-less errors end a stream or refuse a message. These are ChatClient's own methods (`this` is
 * the client): client.js copies them onto it.
 */
class ClientFrames {
  // --- frames ----------------------------------------------------------------------------------

  _onFrame(frame) {
    if (!frame || typeof frame !== "object") return;
    this.watchdog.touch(this._now());
    if (frame.type === "ping" || frame.type === "pong" || frame.type === "welcome") return;
    if (frame.type === "accepted") return this._onAccepted(frame);
    if (typeof frame.seq === "number" && frame.stream_id) return this._onStreamEvent(frame);
    if (frame.type === "error") return this._onErrorFrame(frame);
    // "ended" (protocol 1.1): a resume at or after the terminal event; that reply is complete here.
  }

  _onAccepted(frame) {
    const cmid = frame.client_message_id;
    const index = this.outbox.findIndex((m) => m.client_message_id === cmid);
    if (index >= 0) {
      this.outbox.splice(index, 1);
      this._persist();
    }
    let reply = this.replies.get(frame.stream_id);
    if (!reply) {
      reply = new ReplyState(frame.stream_id, cmid);
      this._addReply(reply);
      this._emit("accepted", { client_message_id: cmid, stream_id: frame.stream_id });
    }
    if (this.cancelOnAccept.delete(cmid) && this.transport) {
      this._transmit(this.transport, { type: "cancel", stream_id: frame.stream_id });
    }
    if (this.transport && !this.transport.followsOnSend && reply.status === "streaming") {
      this._transmit(this.transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
    }
  }

  _addReply(reply) {
    this.replies.set(reply.stream_id, reply);
    if (this.replies.size > this.options.maxReplies) {
      for (const [id, r] of this.replies) {
        if (this.replies.size <= this.options.maxReplies) break;
        if (r.status !== "streaming") this.replies.delete(id);
      }
    }
  }

  _onStreamEvent(event) {
    let reply = this.replies.get(event.stream_id);
    if (!reply) {
      reply = new ReplyState(event.stream_id, event.client_message_id);
      this._addReply(reply);
    }
    const verdict = reply.apply(event);
    if (verdict === "gap") {
      // A missing seq (a lost live message): ask again from the last one we hold, once.
      if (!reply.resyncing && this.transport) {
        reply.resyncing = true;
        this._transmit(this.transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
      }
      return;
    }
    if (verdict !== "applied") return;
    reply.resyncing = false;
    const base = { stream_id: reply.stream_id, client_message_id: reply.client_message_id, seq: event.seq };
    switch (event.type) {
      case "start":
        this._emit("start", base);
        break;
      case "delta":
        if (reply.shown != null) {
          // Rebuilding a reply redrawn from history: stay quiet until we are past what is shown.
          if (reply.text.length <= reply.shown.length && reply.shown.startsWith(reply.text)) break;
          reply.shown = null;
        }
        this._emit("delta", Object.assign(base, { delta: event.text, text: reply.text }));
        break;
      case "retract":
        reply.shown = null;
        this._emit("retract", Object.assign(base, { reason: event.reason, text: reply.text }));
        break;
      case "done":
        this._emit("done", Object.assign(base, { finish_reason: event.finish_reason, text: reply.text }));
        this._releaseBusy();
        break;
      case "error":
        this._emit(
          "error",
          Object.assign(base, {
            code: event.code,
            message: event.message,
            retryable: !!event.retryable,
            terminal: true,
          })
        );
        this._releaseBusy();
        break;
      default:
        break;
    }
  }

  _onErrorFrame(frame) {
    if (frame.code === "shutting_down") return; // a 1012 close follows; the message stays queued
    if (frame.stream_id && ENDS_STREAM.indexOf(frame.code) >= 0) {
      // The stream cannot be followed any more (gone from the buffer, or not ours): end it here,
      // or every reconnect would try to resume it again.
      const reply = this.replies.get(frame.stream_id);
      if (reply && reply.status === "streaming") {
        reply.status = "error";
        reply.error = { code: frame.code, message: frame.message, retryable: false };
      }
      this._emit("error", {
        stream_id: frame.stream_id,
        client_message_id: reply ? reply.client_message_id : null,
        code: frame.code,
        message: frame.message || "this reply is no longer available",
        retryable: false,
        terminal: true,
      });
      return;
    }
    if (frame.client_message_id && SEND_AGAIN.indexOf(frame.code) >= 0) {
      const msg = this.outbox.find((m) => m.client_message_id === frame.client_message_id);
      if (msg) {
        const waitMs =
          frame.code === "conversation_busy"
            ? this.options.busyRetryMs
            : Math.max(0, Number(frame.retry_after_ms) || this.options.rateLimitedRetryMs);
        this._holdMessage(msg, frame.code, waitMs);
        this._emit("delayed", {
          client_message_id: msg.client_message_id,
          code: frame.code,
          message: frame.message || "",
          retry_in_ms: waitMs,
        });
      }
      return;
    }
    if (frame.retryable) {
      // Refused or interrupted for now (e.g. buffer_unavailable: the server's store is down):
      // keep the message queued, or keep following the reply, and try again after a pause.
      this._retryLater(frame);
    } else if (frame.client_message_id) {
      // The server refused this message for good (SSE 4xx): do not retry it.
      this.outbox = this.outbox.filter((m) => m.client_message_id !== frame.client_message_id);
      this._persist();
    }
    this._emit("error", {
      stream_id: frame.stream_id || null,
      client_message_id: frame.client_message_id || null,
      code: frame.code || "error",
      message: frame.message || "",
      retryable: !!frame.retryable,
    });
  }

  _retryLater(frame) {
    const delay = Math.max(Number(frame.retry_after_ms) || 0, this.options.backoffBaseMs * 4);
    const refusedOn = this.transport;
    this.env.setTimeout(() => {
      const transport = this.transport;
      // A reconnect in the meantime resent the queue and resumed every reply already.
      if (!transport || transport !== refusedOn || this.state !== "connected") return;
      if (frame.client_message_id) {
        const msg = this.outbox.find((m) => m.client_message_id === frame.client_message_id);
        if (!msg) return; // accepted meanwhile
        msg.sentOn = null;
        this._flush();
      } else if (frame.stream_id) {
        const reply = this.replies.get(frame.stream_id);
        if (reply && reply.status === "streaming") {
          this._transmit(transport, { type: "resume", stream_id: reply.stream_id, after_seq: reply.lastSeq });
        }
      }
    }, delay);
  }

  _latestStreaming() {
    let latest = null;
    for (const reply of this.replies.values()) if (reply.status === "streaming") latest = reply;
    return latest;
  }
}
