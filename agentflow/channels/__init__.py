"""Channels: thin adapters from a medium (terminal, web, Telegram, WhatsApp) to the conversation engine."""
