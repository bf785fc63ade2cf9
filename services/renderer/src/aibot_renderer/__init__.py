"""aibot_renderer"""
