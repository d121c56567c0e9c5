"""Policy bundles: the versioned history, amendments, and the push channel to agents."""
