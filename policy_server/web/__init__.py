"""The server's web consoles: login, incidents, workstations, ISUO access log.

Server-rendered HTML in Kyrgyz, Russian and English, no JavaScript needed.
`routes.router` is included by `policy_server.app.create_app`; `i18n` is the
translation layer other parts of the server use for person-facing strings.
"""
