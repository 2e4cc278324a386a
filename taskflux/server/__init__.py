"""The gevent runtime of a TaskFlux node: the node loop, peer links, the client servers, main()."""
