"""flowserv-async: an asyncio-native reproducible workflow service."""
