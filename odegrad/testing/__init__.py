"""User-facing gradient-correctness suite (see issue: testing)."""
