"""bridge: a call-control layer that lets a voice AI drive live FreeSWITCH calls."""

__version__ = "0.1.0"
