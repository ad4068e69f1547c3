"""FastAPI: the app factory, routes, services, admission and the HTTP edges."""
