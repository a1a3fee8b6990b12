"""Speech to text without torch: pocketsphinx decoding, and a worker process that runs it beside the CNN."""
