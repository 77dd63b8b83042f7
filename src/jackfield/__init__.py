"""jackfield: a patch panel for a LiveKit voice agent whose tools come from MCP servers."""

__version__ = "0.1.0"
