"""`gesture-cache serve`: the live web page (app), one detection session a browser (session)."""
