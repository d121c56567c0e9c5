"""The school itself: its name, its rooms (labs), and the demo school."""
