"""GitHubOrgSettings: the organisation's side of the estate, as code — the `workflow_job`
webhook pointing at the scaler, and one runner group per group of pools, open only to the
repositories (and workflows) the stack names."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_github as github

from estate.derive.runner_groups import RunnerGroupPlan


@dataclass(frozen=True)
class GitHubOrgSettingsArgs:
    org: str
    app_id: int
    installation_id: int
    api_url: str
    app_private_key: pulumi.Input[str]
    webhook_url: pulumi.Input[str]
    webhook_secret: pulumi.Input[str]
    groups: list[RunnerGroupPlan]


def signing_secret(value: str) -> str:
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    return lines[0] if lines else value


class GitHubOrgSettings(pulumi.ComponentResource):
    webhook_id: pulumi.Output[str]
    runner_group_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: GitHubOrgSettingsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("runner-estate:index:GitHubOrgSettings", name, None, opts)
        # An explicit provider: pulumi_github would otherwise read GITHUB_TOKEN / GITHUB_OWNER,
        # which in Actions is the workflow's own token.
        provider = github.Provider(
            f"{name}-provider",
            owner=args.org,
            base_url=args.api_url.rstrip("/") + "/",
            app_auth=github.ProviderAppAuthArgs(
                id=str(args.app_id), installation_id=str(args.installation_id), pem_file=pulumi.Output.secret(args.app_private_key)
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        invoke = pulumi.InvokeOptions(parent=self, provider=provider)

        hook = github.OrganizationWebhook(
            f"{name}-workflow-job-hook",
            events=["workflow_job"],
            active=True,
            configuration=github.OrganizationWebhookConfigurationArgs(
                url=args.webhook_url,
                content_type="json",
                insecure_ssl=False,
                # GitHub signs with the first line; during a rotation the webhook accepts every line.
                secret=pulumi.Output.secret(pulumi.Output.from_input(args.webhook_secret).apply(signing_secret)),
            ),
            opts=child,
        )
        self.runner_group_ids = {}
        for group in args.groups:
            repo_ids = [github.get_repository_output(full_name=f"{args.org}/{repo}", opts=invoke).repo_id for repo in group.repositories]
            made = github.ActionsRunnerGroup(
                f"{name}-group-{group.name}",
                name=group.name,
                visibility="selected",
                selected_repository_ids=repo_ids,
                restricted_to_workflows=bool(group.workflows),
                selected_workflows=list(group.workflows) or None,
                allows_public_repositories=group.allows_public_repositories,
                opts=child,
            )
            self.runner_group_ids[group.name] = made.id

        self.webhook_id = hook.id
        self.register_outputs({"webhook_id": self.webhook_id, "runner_group_ids": self.runner_group_ids})
