"""ftlang.lang."""
