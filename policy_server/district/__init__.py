from policy_server.district import error_texts as _error_texts  # noqa: E402,F401  (registers the codes' texts)
