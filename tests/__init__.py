"""Unit and integration tests."""
