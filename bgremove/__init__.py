"""Background-removal pipeline: storage trigger -> predictions API -> webhook -> processed bucket."""
