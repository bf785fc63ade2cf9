"""aibot_asr_worker"""
