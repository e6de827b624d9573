"""Customer webhooks: where call events may be sent, and how they are signed."""
