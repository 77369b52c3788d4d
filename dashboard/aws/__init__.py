"""Thin clients for the AWS services the dashboard uses, one module per service.

Views, services and tasks call these plain functions and never import boto3.
Every function turns botocore's errors into :mod:`dashboard.aws.errors`.
"""
