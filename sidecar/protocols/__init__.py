"""Protocol adapters: one module per API dialect behind the `Adapter` interface."""
