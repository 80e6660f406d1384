"""The REST API's routes, one module per resource (REST.md route table)."""
