"""Pure (sans-IO) codecs of TaskFlux's wire protocols: bytes in, messages out, and back. No sockets here."""
