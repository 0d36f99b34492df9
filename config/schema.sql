-- cm-api development / test / demo schema: the two tables the dashboard reads.
-- Production databases only need tables with a single-column primary key; cm-api reads the
-- columns from information_schema at start-up and never assumes this exact layout.
CREATE TABLE acc (
    id          INT UNSIGNED    NOT NULL AUTO_INCREMENT,
    name        VARCHAR(100)    NOT NULL,
    status      ENUM('active', 'suspended', 'closed') NOT NULL DEFAULT 'active',
    balance     DECIMAL(18, 4)  NOT NULL DEFAULT 0,
    credit_limit DECIMAL(18, 2) NULL,
    created_at  DATETIME(6)     NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    notes       TEXT            NULL,
    PRIMARY KEY (id),
    KEY ix_acc_status (status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE user (
    id            INT UNSIGNED  NOT NULL AUTO_INCREMENT,
    acc_id        INT UNSIGNED  NOT NULL,
    login         VARCHAR(64)   NOT NULL,
    full_name     VARCHAR(200)  NULL,
    email         VARCHAR(254)  NULL,
    role          VARCHAR(32)   NOT NULL DEFAULT 'viewer',
    password_hash VARCHAR(255)  NULL,
    last_login    DATETIME      NULL,
    birthday      DATE          NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_user_login (login),
    KEY ix_user_acc (acc_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
