"""SSH: the gateway's SSH connections and the sans-IO codecs it inspects sessions with (SFTP)."""
