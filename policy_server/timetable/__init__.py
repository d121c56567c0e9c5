"""The timetable: classes, weekly periods, the internet-use schedule, seating plans (issue 13)."""
