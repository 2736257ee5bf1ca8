// @generated automatically by Diesel CLI.

diesel::table! {
    access_rules (id) {
        id -> Uuid,
        account_id -> Uuid,
        name -> Text,
        enabled -> Bool,
        document -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    accounts (id) {
        id -> Uuid,
        name -> Text,
        plan -> Text,
        trial_expires_at -> Nullable<Timestamptz>,
        metrics_enabled -> Bool,
        event_sample -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        require_publisher_key_approval -> Bool,
        locked_at -> Nullable<Timestamptz>,
        lock_reason -> Nullable<Text>,
    }
}

diesel::table! {
    agent_tools (agent_id, tool_id) {
        account_id -> Uuid,
        agent_id -> Uuid,
        tool_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    agents (id) {
        id -> Uuid,
        account_id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        scopes -> Jsonb,
        redirect_uris -> Jsonb,
        resources -> Jsonb,
        attributes -> Jsonb,
        auth_method -> Text,
        jwks -> Nullable<Jsonb>,
        jwks_uri -> Nullable<Text>,
        access_token_seconds -> Int4,
        refresh_token_seconds -> Nullable<Int4>,
        state -> Text,
        registered_by -> Nullable<Uuid>,
        registration_digest -> Nullable<Bytea>,
        registration_expires_at -> Nullable<Timestamptz>,
        secret_digest -> Nullable<Bytea>,
        previous_secret_digest -> Nullable<Bytea>,
        previous_secret_until -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        activated_at -> Nullable<Timestamptz>,
        metadata_url -> Nullable<Text>,
        registered_dynamically -> Bool,
        dynamic_fingerprint -> Nullable<Bytea>,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Uuid,
        account_id -> Uuid,
        digest -> Bytea,
        kind -> Text,
        scopes -> Text,
        name -> Nullable<Text>,
        app_name -> Nullable<Text>,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        replaced_by -> Nullable<Uuid>,
        assigned_to -> Nullable<Uuid>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_logs (id) {
        id -> Int8,
        account_id -> Uuid,
        actor -> Text,
        token_id -> Nullable<Uuid>,
        user_id -> Nullable<Uuid>,
        action -> Text,
        status -> Text,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        metadata -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    authorization_codes (digest) {
        digest -> Bytea,
        account_id -> Uuid,
        agent_id -> Uuid,
        principal_id -> Uuid,
        delegation_id -> Uuid,
        redirect_uri -> Text,
        code_challenge -> Text,
        scopes -> Jsonb,
        openid -> Bool,
        resources -> Jsonb,
        nonce -> Nullable<Text>,
        auth_time -> Timestamptz,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        spent_at -> Nullable<Timestamptz>,
        family_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    billing_budgets (account_id, meter, subject) {
        account_id -> Uuid,
        meter -> Text,
        subject -> Text,
        monthly_credits -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    billing_customers (customer_id) {
        customer_id -> Text,
        account_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    billing_events (event_id) {
        event_id -> Text,
        event_type -> Text,
        event_created_at -> Timestamptz,
        received_at -> Timestamptz,
        account_id -> Nullable<Uuid>,
        outcome -> Text,
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    billing_notice_endpoints (account_id) {
        account_id -> Uuid,
        url -> Text,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    billing_notices (id) {
        id -> Uuid,
        account_id -> Uuid,
        subject -> Text,
        period_start -> Timestamptz,
        threshold -> Int2,
        used -> Int8,
        allowed -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    billing_subscriptions (account_id) {
        account_id -> Uuid,
        subscription_id -> Text,
        customer_id -> Text,
        plan -> Text,
        status -> Text,
        current_period_start -> Nullable<Timestamptz>,
        current_period_end -> Nullable<Timestamptz>,
        cancel_at_period_end -> Bool,
        canceled_at -> Nullable<Timestamptz>,
        ended_at -> Nullable<Timestamptz>,
        event_id -> Text,
        event_created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    credit_entries (id) {
        id -> Uuid,
        account_id -> Uuid,
        kind -> Text,
        amount -> Int8,
        balance_after -> Int8,
        grant_id -> Nullable<Uuid>,
        burns -> Jsonb,
        idempotency_key -> Nullable<Text>,
        reason -> Nullable<Text>,
        actor -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    credit_grants (id) {
        id -> Uuid,
        account_id -> Uuid,
        source -> Text,
        amount -> Int8,
        remaining -> Int8,
        priority -> Int2,
        effective_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        origin -> Nullable<Text>,
    }
}

diesel::table! {
    credit_reservations (id) {
        id -> Uuid,
        account_id -> Uuid,
        amount -> Int8,
        burns -> Jsonb,
        status -> Text,
        settled_amount -> Nullable<Int8>,
        expires_at -> Timestamptz,
        created_at -> Timestamptz,
        closed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    delegations (id) {
        id -> Uuid,
        account_id -> Uuid,
        grantor_principal_id -> Nullable<Uuid>,
        grantor_agent_id -> Nullable<Uuid>,
        agent_id -> Uuid,
        scopes -> Jsonb,
        tools -> Nullable<Jsonb>,
        resources -> Jsonb,
        task_id -> Nullable<Text>,
        max_depth -> Int4,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        created_by -> Text,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
        revoked_by -> Nullable<Text>,
    }
}

diesel::table! {
    events (id) {
        id -> Int8,
        account_id -> Uuid,
        event_key -> Bytea,
        token_id -> Nullable<Uuid>,
        event_type -> Text,
        occurred_at -> Timestamptz,
        ingested_at -> Timestamptz,
        app_name -> Nullable<Text>,
        service -> Nullable<Text>,
        host -> Nullable<Text>,
        source_ip -> Nullable<Text>,
        request_id -> Nullable<Text>,
        decision -> Nullable<Int2>,
        tool -> Nullable<Text>,
        latency_ms -> Nullable<Float8>,
        payload -> Jsonb,
        stream_position -> Int8,
    }
}

diesel::table! {
    ingest_refusals (account_id, hour) {
        account_id -> Uuid,
        hour -> Timestamptz,
        events -> Int8,
        batches -> Int8,
    }
}

diesel::table! {
    invitations (id) {
        id -> Uuid,
        account_id -> Uuid,
        email -> Text,
        role -> Text,
        invited_by -> Nullable<Uuid>,
        digest -> Nullable<Bytea>,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        accepted_at -> Nullable<Timestamptz>,
        accepted_by -> Nullable<Uuid>,
        cancelled_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    job_checkpoints (job) {
        job -> Text,
        ingested_at -> Timestamptz,
        event_id -> Int8,
        updated_at -> Timestamptz,
        stream_position -> Int8,
    }
}

diesel::table! {
    members (account_id, user_id) {
        account_id -> Uuid,
        user_id -> Uuid,
        role -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_catalogs (account_id) {
        account_id -> Uuid,
        seeded_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_client_assertions (agent_id, jti) {
        agent_id -> Uuid,
        jti -> Text,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_client_policies (account_id) {
        account_id -> Uuid,
        metadata_documents -> Bool,
        scopes -> Jsonb,
        resources -> Jsonb,
        updated_at -> Timestamptz,
        dynamic_registration -> Bool,
        initial_access_digest -> Nullable<Bytea>,
    }
}

diesel::table! {
    oauth_scopes (account_id, name) {
        account_id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        category -> Nullable<Text>,
        implies -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    oauth_tokens (id) {
        id -> Uuid,
        account_id -> Uuid,
        agent_id -> Uuid,
        kind -> Text,
        family_id -> Uuid,
        parent_id -> Nullable<Uuid>,
        subject -> Text,
        scopes -> Jsonb,
        audience -> Jsonb,
        task_id -> Text,
        parent_task_id -> Nullable<Text>,
        grant_type -> Text,
        digest -> Bytea,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_reason -> Nullable<Text>,
        spent_at -> Nullable<Timestamptz>,
        sealed_answer -> Nullable<Bytea>,
        principal_id -> Nullable<Uuid>,
        delegation_id -> Nullable<Uuid>,
        chain -> Jsonb,
        may_act -> Nullable<Uuid>,
        dpop_jkt -> Nullable<Text>,
    }
}

diesel::table! {
    policies (id) {
        id -> Uuid,
        account_id -> Uuid,
        app_name -> Text,
        version -> Int8,
        stage -> Text,
        active -> Bool,
        document -> Jsonb,
        jws -> Nullable<Text>,
        etag -> Text,
        kid -> Nullable<Text>,
        tool_count -> Int4,
        size_bytes -> Int8,
        description -> Nullable<Text>,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        actor -> Text,
        token_id -> Nullable<Uuid>,
        user_id -> Nullable<Uuid>,
        publisher_key_id -> Nullable<Text>,
        rotation_id -> Nullable<Text>,
        content_digest -> Nullable<Text>,
    }
}

diesel::table! {
    principals (id) {
        id -> Uuid,
        account_id -> Uuid,
        username -> Text,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        attributes -> Jsonb,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    publisher_keys (account_id, key_id) {
        account_id -> Uuid,
        key_id -> Text,
        public_key -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        uploaded_by -> Text,
        token_id -> Nullable<Uuid>,
        user_id -> Nullable<Uuid>,
        pending -> Bool,
        approved_at -> Nullable<Timestamptz>,
        approved_by -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        account_id -> Uuid,
        public_n -> Nullable<Text>,
        public_e -> Nullable<Text>,
        aes_key_id -> Text,
        sealed_private -> Bytea,
        created_at -> Timestamptz,
        retired_at -> Nullable<Timestamptz>,
        seal_version -> Int2,
        alg -> Text,
        public_x -> Nullable<Text>,
        public_y -> Nullable<Text>,
    }
}

diesel::table! {
    tasks (id) {
        id -> Int8,
        kind -> Text,
        account_id -> Nullable<Uuid>,
        payload -> Jsonb,
        state -> Text,
        attempts -> Int4,
        run_at -> Timestamptz,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    tools (id) {
        id -> Uuid,
        account_id -> Uuid,
        name -> Text,
        description -> Nullable<Text>,
        category -> Nullable<Text>,
        parameters -> Jsonb,
        required_scopes -> Jsonb,
        active -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    usage_hours (account_id, hour, meter, subject, operation, credential) {
        account_id -> Uuid,
        hour -> Timestamptz,
        meter -> Text,
        subject -> Text,
        operation -> Text,
        credential -> Text,
        reports -> Int8,
        input_tokens -> Int8,
        output_tokens -> Int8,
        invocations -> Int8,
        credits -> Int8,
    }
}

diesel::table! {
    usage_records (id) {
        id -> Uuid,
        account_id -> Uuid,
        idempotency_key -> Text,
        meter -> Text,
        subject -> Text,
        operation -> Text,
        input_tokens -> Int8,
        output_tokens -> Int8,
        invocations -> Int8,
        credits -> Int8,
        price_version -> Int4,
        credential -> Text,
        recorded_at -> Timestamptz,
        entry_id -> Uuid,
    }
}

diesel::table! {
    users (id) {
        id -> Uuid,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        full_name -> Nullable<Text>,
        created_at -> Timestamptz,
        issuer -> Nullable<Text>,
        subject -> Nullable<Text>,
        email_verified -> Bool,
        last_sign_in_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(access_rules -> accounts (account_id));
diesel::joinable!(agent_tools -> accounts (account_id));
diesel::joinable!(agent_tools -> agents (agent_id));
diesel::joinable!(agent_tools -> tools (tool_id));
diesel::joinable!(agents -> accounts (account_id));
diesel::joinable!(agents -> users (registered_by));
diesel::joinable!(api_tokens -> accounts (account_id));
diesel::joinable!(authorization_codes -> accounts (account_id));
diesel::joinable!(authorization_codes -> agents (agent_id));
diesel::joinable!(authorization_codes -> delegations (delegation_id));
diesel::joinable!(authorization_codes -> principals (principal_id));
diesel::joinable!(billing_budgets -> accounts (account_id));
diesel::joinable!(billing_customers -> accounts (account_id));
diesel::joinable!(billing_events -> accounts (account_id));
diesel::joinable!(billing_notice_endpoints -> accounts (account_id));
diesel::joinable!(billing_notices -> accounts (account_id));
diesel::joinable!(billing_subscriptions -> accounts (account_id));
diesel::joinable!(credit_entries -> accounts (account_id));
diesel::joinable!(credit_entries -> credit_grants (grant_id));
diesel::joinable!(credit_grants -> accounts (account_id));
diesel::joinable!(credit_reservations -> accounts (account_id));
diesel::joinable!(credit_reservations -> credit_entries (id));
diesel::joinable!(delegations -> accounts (account_id));
diesel::joinable!(delegations -> principals (grantor_principal_id));
diesel::joinable!(events -> accounts (account_id));
diesel::joinable!(ingest_refusals -> accounts (account_id));
diesel::joinable!(invitations -> accounts (account_id));
diesel::joinable!(members -> accounts (account_id));
diesel::joinable!(members -> users (user_id));
diesel::joinable!(oauth_catalogs -> accounts (account_id));
diesel::joinable!(oauth_client_assertions -> agents (agent_id));
diesel::joinable!(oauth_client_policies -> accounts (account_id));
diesel::joinable!(oauth_scopes -> oauth_catalogs (account_id));
diesel::joinable!(oauth_tokens -> delegations (delegation_id));
diesel::joinable!(oauth_tokens -> principals (principal_id));
diesel::joinable!(policies -> accounts (account_id));
diesel::joinable!(principals -> accounts (account_id));
diesel::joinable!(publisher_keys -> accounts (account_id));
diesel::joinable!(signing_keys -> accounts (account_id));
diesel::joinable!(tools -> accounts (account_id));
diesel::joinable!(usage_hours -> accounts (account_id));
diesel::joinable!(usage_records -> accounts (account_id));

diesel::allow_tables_to_appear_in_same_query!(
    access_rules,
    accounts,
    agent_tools,
    agents,
    api_tokens,
    audit_logs,
    authorization_codes,
    billing_budgets,
    billing_customers,
    billing_events,
    billing_notice_endpoints,
    billing_notices,
    billing_subscriptions,
    credit_entries,
    credit_grants,
    credit_reservations,
    delegations,
    events,
    ingest_refusals,
    invitations,
    job_checkpoints,
    members,
    oauth_catalogs,
    oauth_client_assertions,
    oauth_client_policies,
    oauth_scopes,
    oauth_tokens,
    policies,
    principals,
    publisher_keys,
    signing_keys,
    tasks,
    tools,
    usage_hours,
    usage_records,
    users,
);
