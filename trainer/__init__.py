"""blastscope trainer."""
