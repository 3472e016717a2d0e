-- user_logins exactly as the reference Postgres (fetchdocker/data-takehome-postgres) ships it.
-- veil creates the same table (from its built-in login contract) when it is missing; `veil run`
-- never alters it (`veil migrate` adds a column the contract has and the table lacks). The tests
-- and benches use this file to start from the reference environment.
CREATE TABLE IF NOT EXISTS user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
);
