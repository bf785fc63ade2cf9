"""aibot_ingress_feishu"""
