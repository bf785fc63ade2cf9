"""aibot_ingress_telegram"""
