"""Settings, read from the environment with working defaults for one machine (the README's
configuration table lists them)."""

import os

from collage_app.env import (
    BASE_DIR,
    database_config,
    env_bool,
    env_float,
    env_int,
    env_list,
    redis_url,
    secret_key,
    storage_url,
    var_dir,
)

VAR_DIR = var_dir()
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = secret_key(DEBUG)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_rq",
    "labeling",
]

MIDDLEWARE = [
    # Outermost: reruns a request whose database connection was cut (when that is safe).
    "labeling.web.middleware.RetryLostDatabaseConnection",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "labeling.web.middleware.RequestBodyLimit",  # a JSON 400 before anything reads a huge body
    "labeling.web.middleware.SessionMiddleware",  # Django's, noting a save lost to a cut connection
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before CSRF: a logged-out API call hears 401 JSON, not a CSRF 403 page.
    "labeling.web.middleware.LoginRequiredEverywhere",
    "django.middleware.csrf.CsrfViewMiddleware",
    "labeling.web.middleware.QueueUnavailableAs503",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "labeling.web.server_paths.HideServerPaths",  # no absolute server path in any answer
    "labeling.web.strict_json.StrictJsonResponses",  # innermost: JSON leaves strict (no NaN)
]

ROOT_URLCONF = "collage_app.urls"
WSGI_APPLICATION = "collage_app.wsgi.application"
ASGI_APPLICATION = "collage_app.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_config(os.environ.get("DATABASE_URL"), VAR_DIR / "db.sqlite3")}
# A reused connection is checked before each request uses it: one the server cut meanwhile
# (failover, restart, pg_terminate_backend) is replaced instead of failing the request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns about a missing one
WHITENOISE_USE_FINDERS = DEBUG  # development serves straight from static/ and node_modules/
# Our own JS/CSS plus the third-party viewer from npm (installed by `make setup`, never committed).
STATICFILES_DIRS = [BASE_DIR / "static"]
if (BASE_DIR / "node_modules").is_dir():
    STATICFILES_DIRS.append(("vendor", BASE_DIR / "node_modules"))

# --- jobs -------------------------------------------------------------------------------------
REDIS_URL = redis_url()
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": timeout}
    for name, timeout in (("default", 3600), ("train", 6 * 3600), ("score", 3 * 3600))
}
RQ_SHOW_ADMIN_LINK = True
# Every `manage.py rqworker`: the work horse dies with its worker, and a Redis outage is waited
# out instead of ending the worker (workers/rq_worker.py).
RQ = {"WORKER_CLASS": "workers.rq_worker.Worker"}
# How long a new retrain cycle waits for a process of an earlier cycle of its project to end
# (labeling/loop/cycle_lock.py) before it fails.
CYCLE_LOCK_WAIT_S = env_int("CYCLE_LOCK_WAIT_S", 120)
# The training profile of the dashboard's Train / Retrain button and the API's retrain
# (mlcore.train.profiles: quick on a CPU, full on a GPU, tiny for tests).
DEFAULT_TRAIN_PROFILE = os.environ.get("DEFAULT_TRAIN_PROFILE", "quick")
# No silent regressions (labeling/loop/cycle.py, promote): a cycle's new version whose held-out
# figure (its calibration-scene object F1, the mean over classes at its calibrated thresholds)
# is below the current model's by more than this margin is kept, ready, but not made current;
# the dashboard says why and offers "Make current". In F1 units. Why 0.01: over 10 paired seeds
# the change of this figure in one retrain varies by a standard deviation of 0.003-0.007 between
# fine-tune seeds of the same answers (median 0.0055; docs/loop.md, "No silent regressions: the
# margin"), so 0.01 is about 1.8 of them: a retrain truly as good as its parent is held back
# in ~3-4% of cycles, and one 0.02 worse is caught in ~96%. 1 never holds a version back.
PROMOTION_MARGIN = env_float("PROMOTION_MARGIN", 0.01)

# --- review -------------------------------------------------------------------------------------
# How long a queue window stays leased to the reviewer it was handed to (labeling/review/queue.py).
REVIEW_LEASE_SECONDS = env_int("REVIEW_LEASE_SECONDS", 120)
# A skipped window comes back once this many other windows of the project were answered or skipped.
REVIEW_SKIP_RETURNS_AFTER = env_int("REVIEW_SKIP_RETURNS_AFTER", 10)
# How long Redis keeps a project's set of answered windows before it is rebuilt from the database.
REVIEW_ANSWERED_SECONDS = env_int("REVIEW_ANSWERED_SECONDS", 3600)

# --- the pipeline -------------------------------------------------------------------------------
SPARK_MASTER = os.environ.get("SPARK_MASTER", "local[*]")
STORAGE_URL = storage_url()
# Uploads: big scenes stream to a temporary file, never into memory.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 1024 * 1024 * 1024)
# Scenes stream into their scoring file and tiles, never held whole: 2.5 gigapixels (7.5 GB of
# pixels) is what one machine scores strip by strip and stores; bombs are refused by the header.
SCENE_MAX_PIXELS = env_int("SCENE_MAX_PIXELS", 2_500_000_000)
# A collage is built in memory (uint8 RGB): 150 megapixels is 450 MB.
COLLAGE_MAX_PIXELS = env_int("COLLAGE_MAX_PIXELS", 150_000_000)
# The viewer loads a scene's raw windows whole up to this size, else by blocks of the area in
# view once zoomed in (a gigapixel scene has about a million).
VIEWER_RAW_WINDOWS_WHOLE_PIXELS = env_int("VIEWER_RAW_WINDOWS_WHOLE_PIXELS", 150_000_000)
VIEWER_RAW_WINDOWS_BLOCK = env_int("VIEWER_RAW_WINDOWS_BLOCK", 2048)
# Boxes in one ground-truth file (a scene's CSV or COCO JSON); 200,000 tiles of 32 px is a
# scene of 200 megapixels.
GROUND_TRUTH_MAX_BOXES = env_int("GROUND_TRUTH_MAX_BOXES", 200_000)
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "labeling.ingest.upload_handlers.SizeLimitedUploadHandler",  # stops writing past
    # UPLOAD_MAX_BYTES
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

# --- security -------------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the review page's JS reads it to send X-CSRFToken
CSRF_FAILURE_VIEW = "labeling.views.core.csrf_failure"  # JSON for the API
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"py4j": {"level": "WARNING"}},
}
