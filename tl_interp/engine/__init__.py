"""The one batched engine every study runs on (see docs/architecture.md)."""
