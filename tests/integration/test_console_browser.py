"""The web console in a real browser (headless Chromium driven by Selenium) against a real 3-node cluster: opened
on a follower it moves to the leader; a queue is created, a record enqueued (from the page and from a client) and
the depth follows; a record is taken; the leader is killed and the console finds the new one. Screenshots of the
main pages are saved (TASKFLUX_SCREENSHOTS names the directory; docs/console.md shows them). Also: the queue list's
load time with 1,000 queues.

Chromium and its driver are Debian packages (``apt-get install chromium chromium-driver``); ``.ci/run`` installs
them and sets TASKFLUX_REQUIRE_BROWSER=1, which turns a missing browser into a failure instead of a skip."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskflux.client.client import TaskFluxClient
from tests.support.cluster import LocalCluster, wait_until

pytestmark = pytest.mark.timeout(300)


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("TASKFLUX_REQUIRE_BROWSER"):
            raise AssertionError("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
        pytest.skip("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (requirements-dev.txt)")
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[object]:
    chromium, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: object, name: str, fallback: Path) -> None:
    directory = Path(os.environ.get("TASKFLUX_SCREENSHOTS", fallback))
    directory.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(directory / f"{name}.png"))  # type: ignore[attr-defined]


def text_of(driver: object, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.ID, element_id).text  # type: ignore[attr-defined,no-any-return]
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_the_console_follows_the_cluster(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    cluster = LocalCluster(3, tmp_path)
    with cluster.running():
        leader = cluster.wait_for_leader()
        follower = next(i for i in range(3) if i != leader)
        driver.get(f"http://{cluster.nodes[follower].http_address}/ui/")  # type: ignore[attr-defined]
        leader_address = cluster.nodes[leader].http_address
        wait_until(lambda: leader_address in driver.current_url, 20, "the console to move to the leader")  # type: ignore[attr-defined]
        wait_until(lambda: "leader" in text_of(driver, "status") and "loading" not in text_of(driver, "queue-table"),
                   20, "the queue list")

        # create a queue from the form (it asks for a confirmation)
        driver.find_element(By.NAME, "name").send_keys("jobs")  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "#create-form button").click()  # type: ignore[attr-defined]
        driver.switch_to.alert.accept()  # type: ignore[attr-defined]
        wait_until(lambda: "created" in text_of(driver, "create-result"), 20, "the queue created")
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, 'tr[data-queue="jobs"]'), 20, "the new row")  # type: ignore[attr-defined]
        with TaskFluxClient(cluster.client_addresses, timeout=10) as client:  # a dead-letter queue beside its source
            client.create_queue("mail-dead")
            client.create_queue("mail", max_deliveries=5, dead_letter_queue="mail-dead", retry_delay=2)
            client.enqueue_many("mail", [(1, b"welcome 17"), (2, b"digest 3")])
            client.enqueue("mail", 1, b"reminder", delay=3600)
        wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "tr.dead"), 20, "the dead-letter row")  # type: ignore[attr-defined]
        screenshot(driver, "queues", tmp_path)
        driver.set_window_size(390, 844)  # a phone  # type: ignore[attr-defined]
        screenshot(driver, "queues-phone", tmp_path)
        driver.set_window_size(1200, 900)  # type: ignore[attr-defined]

        # the queue's page: enqueue from the page and from a client; the depth follows without a reload
        driver.find_element(By.LINK_TEXT, "jobs").click()  # type: ignore[attr-defined]
        wait_until(lambda: text_of(driver, "stat-ready") == "0", 20, "the queue page")
        driver.find_element(By.NAME, "payload").send_keys("hello from the console")  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "#enqueue-form button").click()  # type: ignore[attr-defined]
        wait_until(lambda: "added" in text_of(driver, "queue-result"), 20, "the record added")
        with TaskFluxClient(cluster.client_addresses, timeout=10) as client:
            client.enqueue("jobs", -1, b"urgent, from a client")
        wait_until(lambda: text_of(driver, "stat-ready") == "2", 20, "the depth to follow")
        wait_until(lambda: "urgent, from a client" in text_of(driver, "peek"), 20, "the peeked records")
        screenshot(driver, "queue", tmp_path)
        driver.find_element(By.ID, "take").click()  # type: ignore[attr-defined]
        wait_until(lambda: "urgent, from a client" in text_of(driver, "queue-result"), 20, "the record taken")
        wait_until(lambda: text_of(driver, "stat-ready") == "1", 20, "the depth after the take")

        # the leader dies: the console finds the new one and goes on
        driver.get(f"http://{leader_address}/ui/#/cluster")  # type: ignore[attr-defined]
        wait_until(lambda: "lag" in text_of(driver, "cluster-nodes"), 20, "the cluster page")
        screenshot(driver, "cluster", tmp_path)
        cluster.nodes[leader].kill()
        wait_until(lambda: leader_address not in driver.current_url, 60, "the console to move to a new leader")  # type: ignore[attr-defined]
        wait_until(lambda: "· leader ·" in text_of(driver, "status"), 30, "the new leader's console")
        new_leader = cluster.wait_for_leader(among=[i for i in range(3) if i != leader])
        assert cluster.nodes[new_leader].http_address in driver.current_url  # type: ignore[attr-defined]
        driver.get(driver.current_url.split("#")[0] + "#/queue/jobs")  # type: ignore[attr-defined]
        wait_until(lambda: text_of(driver, "stat-ready") == "1", 30, "the queue on the new leader")


def test_the_queue_list_loads_with_a_thousand_queues(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    cluster = LocalCluster(1, tmp_path)
    with cluster.running():
        with TaskFluxClient(cluster.client_addresses, timeout=30) as client:
            for number in range(1000):
                client.create_queue(f"queue-{number:04d}")
        started = time.monotonic()
        driver.get(f"http://{cluster.nodes[0].http_address}/ui/")  # type: ignore[attr-defined]
        wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "tr[data-queue]")) == 1001, 60,  # type: ignore[attr-defined]
                   "1,001 rows")
        seconds = time.monotonic() - started
        print(f"the queue list with 1,001 queues loaded in {seconds:.2f} s")
        assert seconds < 15
