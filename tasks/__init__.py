"""The systems maint talks to, one module or package each, returning maint's own dataclasses."""
