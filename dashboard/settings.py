"""Django settings, read only from the environment (see README "Configuration").

Defaults are the embedded local stack's: SQLite under .devstack/, Redis on
localhost, the embedded AWS. ``MODELDECK_ENV=production`` turns on the checks
a real deployment needs (no development secret key, secure cookies, DEBUG off).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from dashboard.envconfig import env_bool, env_float, env_int, env_list, env_str
from dashboard.security import SECRET_KEY_MIN_LENGTH, parse_networks, secret_key_problem

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(env_str("MODELDECK_STATE_DIR", str(BASE_DIR / ".devstack")))

MODELDECK_ENV = env_str("MODELDECK_ENV", "development")
if MODELDECK_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(
        f"MODELDECK_ENV={MODELDECK_ENV!r} must be 'development' or 'production'"
    )
PRODUCTION = MODELDECK_ENV == "production"

DEVELOPMENT_SECRET_KEY = "modeldeck-development-secret-key-do-not-use-in-production"
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if PRODUCTION and (_key_problem := secret_key_problem(SECRET_KEY)):
    raise ImproperlyConfigured(
        "MODELDECK_ENV=production needs SECRET_KEY (or SECRET_KEY_FILE) set to a random value "
        f"of at least {SECRET_KEY_MIN_LENGTH} characters, e.g. "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`; the one given is "
        f"refused: {_key_problem} (the development default is refused)"
    )

DEBUG = env_bool("DEBUG", not PRODUCTION)
if PRODUCTION and DEBUG:
    # DEBUG pages show settings, SQL and stack traces to anyone who hits an error.
    raise ImproperlyConfigured("DEBUG must be off when MODELDECK_ENV=production")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "axes",
    "csp",
    "dashboard.accounts",
    "dashboard.registry",
    "dashboard.deployments",
    "dashboard.audit",
    "dashboard.webhooks",
    "dashboard.monitoring",
    "dashboard.devtools",
]

MIDDLEWARE = [
    # First: everything after it sees the real client address and scheme.
    "dashboard.middleware.TrustedProxyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # The upload's hash worker runs WebAssembly under its own script's policy.
    "dashboard.middleware.WorkerScriptCspMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "dashboard.middleware.ApiJsonErrorsMiddleware",
    "dashboard.middleware.AwsErrorPageMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into our 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "dashboard" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.accounts.context_processors.roles",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{STATE_DIR / 'dashboard.sqlite3'}")
try:
    _database = dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)
except Exception as exc:  # dj-database-url raises bare ValueError/KeyError on junk
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r} is not a database URL: {exc}"
    ) from exc
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the Celery worker write concurrently: WAL lets readers
    # go on during a write and IMMEDIATE transactions avoid "database is locked"
    # on lock upgrades.
    _database["CONN_MAX_AGE"] = 0
    _database["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "models"
LOGOUT_REDIRECT_URL = "login"

# --- Sign-in lockout (django-axes) ------------------------------------------
# Axes checks every sign-in that goes through django.contrib.auth's
# authenticate(): /login/ and /admin/login/ alike. Failures are counted per
# client address; a username is only locked when failures for it come from
# many addresses (a distributed guess), and even then not for the addresses
# it has signed in from before. So a stranger can lock out their own address,
# never someone else's account. See dashboard/accounts/lockout.py.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5, minimum=1)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
LOGIN_USERNAME_MAX_ADDRESSES = env_int("LOGIN_USERNAME_MAX_ADDRESSES", 10, minimum=2)
LOGIN_KNOWN_ADDRESS_DAYS = env_int("LOGIN_KNOWN_ADDRESS_DAYS", 30, minimum=0)
# Callables, so the LOGIN_* settings are read when a sign-in happens.
AXES_FAILURE_LIMIT = "dashboard.accounts.lockout.failure_limit"
AXES_COOLOFF_TIME = "dashboard.accounts.lockout.cool_off"
AXES_LOCKOUT_PARAMETERS = "dashboard.accounts.lockout.lockout_parameters"
AXES_LOCKOUT_CALLABLE = "dashboard.accounts.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "dashboard.middleware.client_ip"
AXES_CLIENT_STR_CALLABLE = "dashboard.accounts.lockout.client_str"
AXES_USERNAME_CALLABLE = "dashboard.accounts.lockout.client_username"
# Signing in to one's own account must not wipe the failures of an address
# that is guessing at others; failures age out after the lockout time instead.
AXES_RESET_ON_SUCCESS = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True
AXES_ACCESS_FAILURE_LOG_PER_USER_LIMIT = 100
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# Our admin site registers axes' records itself (dashboard/accounts/admin.py).
AXES_ENABLE_ADMIN = False

# --- Reverse proxies ----------------------------------------------------------
if env_bool("TRUST_X_FORWARDED_FOR", False):
    raise ImproperlyConfigured(
        "TRUST_X_FORWARDED_FOR is replaced by TRUSTED_PROXIES: name the proxies' addresses or "
        "networks (e.g. TRUSTED_PROXIES=10.0.0.0/8); X-Forwarded-* is only believed from them"
    )
try:
    TRUSTED_PROXY_NETWORKS = parse_networks(env_list("TRUSTED_PROXIES", []))
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from exc
BEHIND_TRUSTED_PROXY = bool(TRUSTED_PROXY_NETWORKS)
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- Static files (htmx etc. come from npm: see package.json) ---------------
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(STATE_DIR / "staticfiles")))
STATICFILES_DIRS = [
    BASE_DIR / "dashboard" / "static",
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
    ("vendor/chartjs", BASE_DIR / "node_modules" / "chart.js" / "dist"),
    ("vendor/hash-wasm", BASE_DIR / "node_modules" / "hash-wasm" / "dist"),
    ("vendor/uplot", BASE_DIR / "node_modules" / "uplot" / "dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- Security ---------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Health checks come over plain HTTP from the platform (Docker, App Runner).
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Only a consent signal for browsers' preload lists; nothing is submitted.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if BEHIND_TRUSTED_PROXY:
        # Believed only because TrustedProxyMiddleware drops the header from
        # every peer that is not a named proxy.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Content-Security-Policy (django-csp): no inline script, no inline style, no
# eval; everything from our own origin. Pages that need more widen it for
# themselves only (the upload page: S3's origin and WebAssembly for hashing).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [NONE],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "manifest-src": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
        "base-uri": [NONE],
        "object-src": [NONE],
    }
}

# Shared by every web process (the login rate limit needs that).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env_str("CACHE_URL", env_str("REDIS_URL", "redis://127.0.0.1:6379/0")),
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}

# --- Celery (Redis broker; job state lives in our own tables) --------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A redelivered deployment task resumes the same App Runner operation, so a
    # short visibility timeout is safe and gets a killed worker's deployment
    # moving again quickly.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60),
}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Model files are loaded only by workers of the "validation" queue, so that a
# deployment can run them in a container of their own (docs/security.md).
CELERY_TASK_ROUTES = {"dashboard.registry.tasks.validation_run": {"queue": "validation"}}
CELERY_BEAT_SCHEDULE = {
    "uploads-abort-abandoned": {
        "task": "dashboard.registry.tasks.uploads_abort_abandoned",
        "schedule": env_float("UPLOAD_JANITOR_EVERY_SECONDS", 3600.0, minimum=5.0),
    },
    "validations-requeue-stale": {
        "task": "dashboard.registry.tasks.validations_requeue_stale",
        "schedule": env_float("VALIDATION_REQUEUE_EVERY_SECONDS", 60.0, minimum=5.0),
    },
    "registry-sync": {
        "task": "dashboard.registry.tasks.registry_sync",
        "schedule": env_float("REGISTRY_SYNC_EVERY_SECONDS", 300.0, minimum=5.0),
    },
    "deployments-reconcile": {
        "task": "dashboard.deployments.tasks.deployments_reconcile",
        "schedule": env_float("DEPLOYMENT_RECONCILE_EVERY_SECONDS", 2.0, minimum=0.2),
    },
    "environments-watch-pointers": {
        "task": "dashboard.deployments.tasks.environments_watch_pointers",
        "schedule": env_float("POINTER_WATCH_EVERY_SECONDS", 60.0, minimum=1.0),
    },
    "webhooks-dispatch-due": {
        "task": "dashboard.webhooks.tasks.webhooks_dispatch_due",
        "schedule": env_float("WEBHOOK_DISPATCH_EVERY_SECONDS", 15.0, minimum=1.0),
    },
}

# --- AWS --------------------------------------------------------------------
# boto3 itself reads AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> and the
# credentials chain; we only pin the region and the bucket.
AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
MODELS_BUCKET = env_str("MODELS_BUCKET", "modeldeck-models")
AWS_CONNECT_TIMEOUT = env_float("AWS_CONNECT_TIMEOUT", 5.0, minimum=0.1)
AWS_READ_TIMEOUT = env_float("AWS_READ_TIMEOUT", 30.0, minimum=0.1)
AWS_MAX_ATTEMPTS = env_int("AWS_MAX_ATTEMPTS", 5, minimum=1)
AWS_S3_ADDRESSING_STYLE = env_str("AWS_S3_ADDRESSING_STYLE", "auto")
if AWS_S3_ADDRESSING_STYLE not in {"auto", "path", "virtual"}:
    raise ImproperlyConfigured("AWS_S3_ADDRESSING_STYLE must be auto, path or virtual")

# --- Registry ---------------------------------------------------------------
VALIDATION_TIME_LIMIT_SECONDS = env_float("VALIDATION_TIME_LIMIT_SECONDS", 300.0, minimum=5.0)
VALIDATION_MEMORY_LIMIT_MB = env_int("VALIDATION_MEMORY_LIMIT_MB", 4096, minimum=512)
# A validation with no answer this long after its time limit is queued again
# (its worker died); keep it above how long the validation queue may back up.
VALIDATION_REQUEUE_GRACE_SECONDS = env_float(
    "VALIDATION_REQUEUE_GRACE_SECONDS", 600.0, minimum=30.0
)
# How a model file is isolated while it is validated (docs/security.md):
# bwrap (bubblewrap namespaces; the default), container (the validation worker's
# own locked-down container is the isolation, for runtimes that forbid
# namespaces), none-dev (no isolation at all; refused in production).
VALIDATION_SANDBOX = env_str("VALIDATION_SANDBOX", "bwrap")
if VALIDATION_SANDBOX not in {"bwrap", "container", "none-dev"}:
    raise ImproperlyConfigured(
        f"VALIDATION_SANDBOX={VALIDATION_SANDBOX!r} must be 'bwrap', 'container' or 'none-dev'"
    )
# Where bubblewrap is (default: bwrap from /usr/bin or /bin).
VALIDATION_BWRAP = env_str("VALIDATION_BWRAP", "")
if PRODUCTION and VALIDATION_SANDBOX == "none-dev":
    raise ImproperlyConfigured(
        "VALIDATION_SANDBOX=none-dev runs model files without any isolation and is refused in "
        "production: use bwrap, or container in a validation container without credentials"
    )
VERSION_DELETE_PROTECT_DAYS = env_int("VERSION_DELETE_PROTECT_DAYS", 30, minimum=0)
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 50 * 1024**3, minimum=1)
UPLOAD_PART_BYTES = env_int("UPLOAD_PART_BYTES", 16 * 1024**2, minimum=5 * 1024**2)
# A part URL is needed from when a client is about to send that part until it
# starts sending; clients ask for fresh ones when theirs expire (403), so a
# leaked URL is useful to no one for long.
UPLOAD_URL_EXPIRES_SECONDS = env_int("UPLOAD_URL_EXPIRES_SECONDS", 900, minimum=60)
UPLOAD_ABANDON_AFTER_HOURS = env_float("UPLOAD_ABANDON_AFTER_HOURS", 24.0, minimum=0.01)

# --- Deployments ------------------------------------------------------------
# How often an in-flight deployment asks the target about its operation.
DEPLOYMENT_POLL_SECONDS = env_float("DEPLOYMENT_POLL_SECONDS", 5.0, minimum=0.05)
# The target's operation must end by then; past it the deployment fails (and
# still follows the operation to its end to put back what was live).
DEPLOYMENT_TIMEOUT_SECONDS = env_int("DEPLOYMENT_TIMEOUT_SECONDS", 1800, minimum=10)
# How long the service may take to report the promoted SHA-256 once live.
DEPLOYMENT_VERIFY_SECONDS = env_float("DEPLOYMENT_VERIFY_SECONDS", 120.0, minimum=1.0)
DEPLOYMENT_VERIFY_POLL_SECONDS = env_float("DEPLOYMENT_VERIFY_POLL_SECONDS", 1.0, minimum=0.05)
# A worker's claim on a deployment, renewed while its step runs: a dead
# worker's claim lapses after this long.
DEPLOYMENT_LEASE_SECONDS = env_float("DEPLOYMENT_LEASE_SECONDS", 30.0, minimum=1.0)
DEPLOYMENT_STEP_TIME_LIMIT_SECONDS = env_int("DEPLOYMENT_STEP_TIME_LIMIT_SECONDS", 300, minimum=10)
DEPLOYMENT_RETRY_MAX_SECONDS = env_float("DEPLOYMENT_RETRY_MAX_SECONDS", 60.0, minimum=0.1)
SERVICE_HTTP_TIMEOUT = env_float("SERVICE_HTTP_TIMEOUT", 5.0, minimum=0.1)
# Page views reuse an environment's live checks (SSM + /version) for this long.
ENVIRONMENT_STATE_CACHE_SECONDS = env_float("ENVIRONMENT_STATE_CACHE_SECONDS", 10.0, minimum=0.0)

# --- Webhooks ---------------------------------------------------------------
# Attempts of one delivery; retry n waits BASE * 4^(n-1) seconds, at most MAX:
# with the defaults, 8 attempts over about 23 hours.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 30.0, minimum=1.0)
WEBHOOK_RETRY_MAX_SECONDS = env_float("WEBHOOK_RETRY_MAX_SECONDS", 12 * 3600.0, minimum=1.0)
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.5)
# Receivers on the dashboard's own host: fine on a laptop, never in production.
WEBHOOK_ALLOW_LOOPBACK = env_bool("WEBHOOK_ALLOW_LOOPBACK", not PRODUCTION)

# --- Monitoring (CloudWatch metrics, logs and alarms) -------------------------
# Where CloudWatch cannot compute percentiles (the embedded AWS: moto computes
# none), the local App Runner stand-in publishes pre-computed p50/p90/p99 under
# this namespace; empty (the default, real AWS) asks CloudWatch for pNN itself.
CLOUDWATCH_PERCENTILES_NAMESPACE = env_str("CLOUDWATCH_PERCENTILES_NAMESPACE", "")
# The inference service's own metrics (EMF lines in its log: dimensions Model and
# Version plus its EMF_DIMENSIONS), by model version. This dimension, set to the
# environment's name, tells environments of one model apart (the inference
# service's EMF_DIMENSIONS=Environment=<name>); empty: none.
INFERENCE_METRICS_NAMESPACE = env_str("INFERENCE_METRICS_NAMESPACE", "ModelDeck/Inference")
INFERENCE_METRICS_ENVIRONMENT_DIMENSION = env_str(
    "INFERENCE_METRICS_ENVIRONMENT_DIMENSION", "Environment"
)
CLOUDWATCH_ALARM_PREFIX = env_str("CLOUDWATCH_ALARM_PREFIX", "modeldeck")
# How long alarm states (DescribeAlarms) are reused by the pages and the bake check.
MONITORING_ALARM_CACHE_SECONDS = env_int("MONITORING_ALARM_CACHE_SECONDS", 10, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"botocore": {"level": "WARNING"}, "urllib3": {"level": "WARNING"}},
}
