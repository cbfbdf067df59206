"""Vigil public API, generated from inference-server/proto (run `make proto`)."""
