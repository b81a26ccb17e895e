"""Chat with images: each question carries one generated 512x512 JPEG (seeded), as a data URL.

    locust -f locustfiles/vision_chat.py --host http://127.0.0.1:8000 --headless -u 10 -t 2m \
        --llm-images 1-3 --llm-image-size 512x512,1024x768 --llm-results results/vision.json

``--llm-image-dir DIR`` sends a folder's images instead; the results' ``images`` section gives
images and pixels per request (docs/metrics.md, "Images").
"""

from llmload import VisionChatUser


class VisionChat(VisionChatUser):
    pass
