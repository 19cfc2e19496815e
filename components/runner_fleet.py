"""RunnerFleet: everything one pool needs so the scaler can launch its instances on demand —
a hardened launch template and a least-privilege instance role. Nothing launches at deploy.

The template boots the pool's image (estate/derive/images.py): the estate's baked image of its
family, named `resolve:ssm:<parameter>` so every launch takes the newest build, or the stock
AMI its filter selects. Disks made from a snapshot (an image's root) are initialized at the
pool's rate, so a host's first reads do not wait on blocks loaded lazily from S3."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from estate.config.pool import Pool
from estate.derive.iam_policies import cloudwatch_agent_policy, ec2_assume_role_policy, jit_parameter_policy, session_manager_policy
from estate.derive.images import STOCK, BootImage, ImagePlan, LaunchDisk, launch_disks
from lambda_src.core.tags import POOL, runner_tags

# EC2 names CPU architectures differently from runner labels.
_AMI_ARCHITECTURE = {"x64": "x86_64", "arm64": "arm64"}


@dataclass(frozen=True)
class RunnerFleetArgs:
    pool: Pool
    environment: str
    security_group_id: pulumi.Input[str]
    public_ip: bool
    log_retention_days: int
    tags: dict[str, str]
    jit_prefix_arn: pulumi.Input[str]  # "arn:aws:ssm:<region>:<account>:parameter/runner-estate/<env>/jit/"
    user_data: pulumi.Input[str]  # the host bootstrap or node slot manager script (estate/derive/host_user_data.py); no credentials in it
    boot: BootImage = STOCK  # what the hosts boot (estate/derive/images.boot_image)
    images: ImagePlan = field(default_factory=lambda: ImagePlan((), {}))
    image_ready: Sequence[pulumi.Resource] = field(default=())  # the deploy-time build of the pool's image


class RunnerFleet(pulumi.ComponentResource):
    launch_template_id: pulumi.Output[str]
    launch_template_version: pulumi.Output[int]
    role_arn: pulumi.Output[str]
    role_name: pulumi.Output[str]
    instance_profile_arn: pulumi.Output[str]
    log_group_names: list[str]

    def __init__(self, name: str, args: RunnerFleetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:RunnerFleet", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pool, rc = args.pool, args.pool.runner

        role = aws.iam.Role(
            f"{name}-role",
            path=f"/runner-estate/{args.environment}/",
            description=f"runner-estate {args.environment} runners of pool {pool.name}",
            assume_role_policy=json.dumps(ec2_assume_role_policy()),
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-runner-config",
            role=role.id,
            policy=pulumi.Output.from_input(args.jit_prefix_arn).apply(lambda arn: json.dumps(jit_parameter_policy(arn))),
            opts=child,
        )
        if rc.enable_ssm_on_runners:
            aws.iam.RolePolicy(f"{name}-session-manager", role=role.id, policy=json.dumps(session_manager_policy()), opts=child)
        self.log_group_names = []
        if rc.enable_cloudwatch_agent:
            self._log_groups(name, args, role)
        for i, arn in enumerate(rc.runner_iam_role_managed_policy_arns):
            aws.iam.RolePolicyAttachment(f"{name}-extra-policy-{i}", role=role.name, policy_arn=arn, opts=child)
        profile = aws.iam.InstanceProfile(f"{name}-profile", role=role.name, path=role.path, tags=args.tags, opts=child)

        image_id: pulumi.Input[str]
        disks: pulumi.Input[list[LaunchDisk]]
        if args.boot.image_id is not None:
            image_id, disks = args.boot.image_id, launch_disks(pool, args.boot, args.images, None)[0]
        else:
            ami = self._ami(pool, child)
            image_id, disks = ami.id, ami.root_device_name.apply(lambda root: launch_disks(pool, args.boot, args.images, root)[0])
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            name_prefix=f"{args.environment}-{pool.name}-",
            description=f"runner-estate {args.environment} pool {pool.name}",
            image_id=image_id,
            update_default_version=True,
            user_data=pulumi.Output.from_input(args.user_data).apply(lambda text: base64.b64encode(text.encode()).decode()),
            # An ephemeral runner powers its host off after its one job; that must end the bill.
            instance_initiated_shutdown_behavior="terminate",
            ebs_optimized="true" if rc.ebs_optimized else None,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint=rc.runner_metadata_options.http_endpoint,
                http_tokens="required" if pool.imdsv2_required else "optional",
                http_put_response_hop_limit=rc.runner_metadata_options.http_put_response_hop_limit,
                instance_metadata_tags=rc.runner_metadata_options.instance_metadata_tags,
            ),
            block_device_mappings=pulumi.Output.from_input(disks).apply(_block_devices),
            network_interfaces=[
                aws.ec2.LaunchTemplateNetworkInterfaceArgs(
                    device_index=0,
                    security_groups=pool.runner_security_groups(args.security_group_id),
                    associate_public_ip_address="true" if args.public_ip else "false",
                    delete_on_termination="true",
                )
            ],
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=rc.enable_runner_detailed_monitoring),
            credit_specification=(
                aws.ec2.LaunchTemplateCreditSpecificationArgs(cpu_credits=rc.credit_specification) if rc.credit_specification else None
            ),
            instance_market_options=(
                aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(market_type="capacity-block")
                if pool.capacity_type == "capacity-block"
                else None
            ),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags={**rc.runner_ec2_tags, **runner_tags(args.environment, pool.name, pool.base_labels)}
                )
                for kind in ("instance", "volume", "network-interface")
            ],
            # Whose template it is: the launching roles may launch only from their own pools' (iam_policies._launch_and_tag).
            tags={**args.tags, POOL: pool.name, **pool.opt_out_tags},
            # A baked image's parameter names a build of this recipe before any launch can use it.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.image_ready)),
        )

        self.launch_template_id = template.id
        self.launch_template_version = template.latest_version
        self.role_arn = role.arn
        self.role_name = role.name
        self.instance_profile_arn = profile.arn
        self.register_outputs(
            {
                "launch_template_id": self.launch_template_id,
                "launch_template_version": self.launch_template_version,
                "role_arn": self.role_arn,
                "instance_profile_arn": self.instance_profile_arn,
                "log_group_names": self.log_group_names,
            }
        )

    @staticmethod
    def _ami(pool: Pool, opts: pulumi.ResourceOptions) -> pulumi.Output[aws.ec2.GetAmiResult]:
        ami = pool.runner.ami_selection
        filters = dict(ami.filter)
        # Guard against an image of the wrong CPU architecture matching a loose name filter.
        filters.setdefault("architecture", [_AMI_ARCHITECTURE[pool.runner.runner_architecture]])
        return aws.ec2.get_ami_output(
            most_recent=True,
            owners=ami.owners,
            filters=[aws.ec2.GetAmiFilterArgs(name=k, values=v) for k, v in sorted(filters.items())],
            opts=pulumi.InvokeOptions(parent=opts.parent),
        )

    def _log_groups(self, name: str, args: RunnerFleetArgs, role: aws.iam.Role) -> None:
        child = pulumi.ResourceOptions(parent=self)
        groups = []
        for log in args.pool.log_files:
            group_name = args.pool.log_group_name(args.environment, log)
            groups.append(
                aws.cloudwatch.LogGroup(
                    f"{name}-log-{log.log_group_name.strip('/').replace('/', '-')}",
                    name=group_name,
                    retention_in_days=args.log_retention_days,
                    tags=args.tags,
                    opts=child,
                )
            )
            self.log_group_names.append(group_name)
        policy = pulumi.Output.all(*[g.arn for g in groups]).apply(lambda arns: json.dumps(cloudwatch_agent_policy(list(arns))))
        aws.iam.RolePolicy(f"{name}-cloudwatch-agent", role=role.id, policy=policy, opts=child)


def _block_devices(disks: list[LaunchDisk]) -> list[aws.ec2.LaunchTemplateBlockDeviceMappingArgs]:
    return [
        aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
            device_name=disk.device_name,
            ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                volume_size=disk.volume_size,
                volume_type=disk.volume_type,
                encrypted="true",
                delete_on_termination="true" if disk.delete_on_termination else "false",
                iops=disk.iops,
                throughput=disk.throughput,
                kms_key_id=disk.kms_key_id,
                snapshot_id=disk.snapshot_id,
                volume_initialization_rate=disk.initialization_rate,
            ),
        )
        for disk in disks
    ]
