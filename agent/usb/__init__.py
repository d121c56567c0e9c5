"""USB device policy: classify devices by interface class, decide, block via sysfs."""
