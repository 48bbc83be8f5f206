"""blastscope converters."""
