"""Vision: describing images and videos (starter perception or a seed VLM), the media search index, and drawing
from the chat. See docs/vision.md. Nothing here imports torch at module level."""
