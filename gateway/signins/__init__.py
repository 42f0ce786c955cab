"""Sign-in state every node of a cluster shares through the database: browsers signed in to
the gateway (``browser``) and to web targets (``targets``)."""
