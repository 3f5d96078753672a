"""The web console: static HTML, CSS and JavaScript, no build step, using only the public API and a token."""
