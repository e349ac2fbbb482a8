"""ftlang.runtime."""
