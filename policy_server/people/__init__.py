"""People with a server login: roles, passwords, login sessions."""
