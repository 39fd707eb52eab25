"""The audit trail: one record per request, its sinks, hash chain, pricing and reports."""
