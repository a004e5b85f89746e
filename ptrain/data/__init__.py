"""Reading splits from files or the Hub, labels, tokenizing with an on-disk cache, loaders and collators.
Knows nothing of tasks or training: a task passes in its columns and its encoder."""
