"""Graph clean-up passes shared by every target."""
