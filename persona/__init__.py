"""Brands as data, and prompt assembly from them."""
