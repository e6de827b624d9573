"""Calls: the request model, admission, the service, outcomes and events."""
