"""edgecomplete: on-device text autocompletion toolkit."""
