"""The demo voice agent (`bridge demo-agent`)."""
