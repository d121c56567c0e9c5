from policy_server.summaries import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
