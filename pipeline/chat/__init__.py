"""Conversation data: converters to OpenAI-style messages and synthetic generators."""
