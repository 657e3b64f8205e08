#!/usr/bin/env python3
"""Create infra/template.yaml as a stack in moto's CloudFormation.

Run by functions/trigger/tests/sqs_template.rs against the testkit's moto
server (AWS_ENDPOINT_URL); prints one JSON document: the stack's status,
its reason, and every resource moto created (logical id, type, status).
Outputs are left out (they may name types moto skips; cfn-lint checks
them).

moto has no SAM transform, so the two SAM resource types the template uses
are expanded here the way the transform does for what moto can create:
AWS::Serverless::Function -> AWS::Lambda::Function (Globals merged, the
code from a bucket, as `aws cloudformation package` rewrites it) and
AWS::Serverless::HttpApi -> AWS::ApiGatewayV2::Api. Their events (routes,
the schedule) are checked by cfn-lint, not here. Every other resource goes
to moto as written.
"""

import copy
import io
import json
import os
import sys
import time
import zipfile

import boto3
import yaml


class Tagged:
    """A CloudFormation short-form tag (!Ref, !Sub, ...), kept as its long form."""


def _construct(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else "Fn::" + tag_suffix
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


yaml.SafeLoader.add_multi_constructor("!", _construct)

BUCKET = "plantd-artifacts"
LAMBDA_KEYS = {
    "Runtime", "Handler", "Architectures", "MemorySize", "Timeout", "Environment",
    "Role", "FunctionName", "Description", "Layers", "VpcConfig", "LoggingConfig",
}


def merge(globals_, props):
    out = copy.deepcopy(globals_)
    for k, v in props.items():
        if k == "Environment" and k in out:
            out[k]["Variables"].update(v.get("Variables", {}))
        else:
            out[k] = v
    return out


def expand(template):
    globals_ = template.get("Globals", {}).get("Function", {})
    resources = {}
    for name, res in template["Resources"].items():
        kind = res["Type"]
        if kind == "AWS::Serverless::Function":
            props = merge(globals_, res["Properties"])
            code_uri = props.pop("CodeUri")
            fn = {k: v for k, v in props.items() if k in LAMBDA_KEYS}
            fn["Code"] = {"S3Bucket": BUCKET, "S3Key": code_uri.replace("../", "")}
            out = {"Type": "AWS::Lambda::Function", "Properties": fn}
        elif kind == "AWS::Serverless::HttpApi":
            props = res.get("Properties", {})
            out = {
                "Type": "AWS::ApiGatewayV2::Api",
                "Properties": {
                    "Name": name,
                    "ProtocolType": "HTTP",
                    "Description": props.get("Description", ""),
                },
            }
        else:
            out = copy.deepcopy(res)
        for key in ("Condition", "DependsOn"):
            if key in res:
                out[key] = res[key]
        resources[name] = out
    # Outputs name resources moto may not create (it skips the types it
    # lacks, e.g. CloudFront); cfn-lint checks them.
    template = {k: v for k, v in template.items() if k not in ("Transform", "Globals", "Outputs")}
    template["Resources"] = resources
    return template


def main():
    path = sys.argv[1]
    with open(path) as f:
        template = expand(yaml.safe_load(f))
    region = os.environ.get("AWS_DEFAULT_REGION", "eu-west-1")
    s3 = boto3.client("s3", region_name=region)
    ec2 = boto3.client("ec2", region_name=region)
    cfn = boto3.client("cloudformation", region_name=region)

    # What `aws cloudformation package` would have uploaded.
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": region})
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\n")
    for res in template["Resources"].values():
        if res["Type"] == "AWS::Lambda::Function":
            s3.put_object(Bucket=BUCKET, Key=res["Properties"]["Code"]["S3Key"], Body=archive.getvalue())

    # A network for the functions and the fan-out service.
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="plantd", Description="plantd", VpcId=vpc)["GroupId"]

    params = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    params.setdefault("SubnetIds", subnet)
    params.setdefault("SecurityGroupIds", group)
    cfn.create_stack(
        StackName="plantd-test",
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.time() + 60
    while True:
        stack = cfn.describe_stacks(StackName="plantd-test")["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS") or time.time() > deadline:
            break
        time.sleep(0.2)
    resources = []
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName="plantd-test"):
        for r in page["StackResourceSummaries"]:
            resources.append(
                {"logical": r["LogicalResourceId"], "type": r["ResourceType"], "status": r["ResourceStatus"]}
            )
    json.dump(
        {
            "status": stack["StackStatus"],
            "reason": stack.get("StackStatusReason", ""),
            "resources": resources,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
